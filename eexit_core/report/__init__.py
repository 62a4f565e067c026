"""The factor report: Markdown and plots from the results store."""
