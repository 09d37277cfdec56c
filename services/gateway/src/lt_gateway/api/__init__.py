"""The HTTP surface: the governed OpenAI endpoints, the model list and the management proxy routes."""
