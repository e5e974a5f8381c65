// The official "everything" MCP server (npm @modelcontextprotocol/server-everything)
// on its streamable HTTP transport, port MCP_PORT. It announces itself on
// stderr; the test supervisor reads stdout, so the line is echoed there.
process.env.PORT = process.env.MCP_PORT;
const log = console.error;
console.error = (...args) => {
  log(...args);
  if (String(args[0]).includes('listening on port')) console.log(...args);
};
await import('@modelcontextprotocol/server-everything/dist/transports/streamableHttp.js');
