"""ollamalike: an Ollama-compatible LLM runner with continuous batching."""

__version__ = "0.7.0"
