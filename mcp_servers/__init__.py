"""FastMCP servers that expose bitrag's retrieval, tools and agent to MCP hosts (stdio and HTTP)."""
