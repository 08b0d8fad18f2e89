"""The `xiaozhi` command line: sub-commands that start each component, and `up`."""
