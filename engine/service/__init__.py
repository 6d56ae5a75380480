"""The local job service: HTTP + JSON on loopback, one worker holding the model warm."""
