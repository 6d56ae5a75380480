"""Processing provider: Text2Earth in the toolbox, the graphical modeler and batch mode."""
