"""Renderers: terminal tables, JSON, JUnit, Markdown, GitHub annotations. The engine never prints."""
