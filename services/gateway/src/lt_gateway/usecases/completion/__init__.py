"""The governed request flow: admit with quota -> call the provider (with fallbacks) -> settle and publish usage."""
