"""Hub: voice commands to actions, fleet registry, HTTP API and discovery."""
