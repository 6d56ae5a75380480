"""The engine service seen from the plugin (stdlib only): start, reach and stop it, its
client, and a job from submit to the delivered file."""
