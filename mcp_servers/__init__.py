"""FastMCP servers that expose bitrag's retrieval, tools and agent to MCP hosts (stdio and
HTTP), and in `client` bitrag as a client of other MCP servers. It may import `retrieval`
and `agent`; `agent` imports it only lazily, for the mcp commands and mcp.json tools."""
