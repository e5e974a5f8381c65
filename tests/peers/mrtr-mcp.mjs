// An MCP server of protocol revision 2026-07-28 only, written with the
// official TypeScript SDK v2 (@modelcontextprotocol/server): its one tool
// asks the user through a multi-round-trip `input_required` result
// (SEP-2322) instead of a server-to-client request.
//
//   node -r ./bind-loopback.cjs mrtr-mcp.mjs
//   env: MCP_PORT
//
// Streamable HTTP at /mcp, stateless (a fresh server instance per request,
// `createMcpHandler` with `legacy: 'reject'`: no 2025 `initialize`).
//
// Tool `book_table` (no arguments, no annotations): the first call answers
// `input_required` with one form elicitation under the key `booking`
// (guests: integer 1..12, time: "18:00" or "20:00") and an opaque
// `requestState`. The retry must carry `inputResponses.booking` and the
// `requestState` unchanged: accepted, it answers "Booked a table for G at
// T."; declined, "No booking made."; cancelled, "Booking cancelled.".
//
// GET /stats: every `tools/call` round as the handler saw it
// (`requestState` echoed or null, `inputResponses`, dropped keys), the
// states minted, and the MCP-Protocol-Version headers of the POSTs.
//
// Prints "MRTR MCP Server listening on port N" once it listens.

import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import {
  McpServer,
  createMcpHandler,
  inputRequired,
  inputResponse,
} from '@modelcontextprotocol/server';
import { toNodeHandler } from '@modelcontextprotocol/node';

const MCP_PORT = Number(process.env.MCP_PORT);

const stats = { rounds: [], minted: [], protocolVersions: [] };

const bookingSchema = {
  type: 'object',
  properties: {
    guests: { type: 'integer', minimum: 1, maximum: 12, title: 'Guests' },
    time: { type: 'string', enum: ['18:00', '20:00'] },
  },
  required: ['guests', 'time'],
};

function text(message, isError = false) {
  return { content: [{ type: 'text', text: message }], ...(isError ? { isError } : {}) };
}

function bookTable(ctx) {
  const state = ctx.mcpReq.requestState() ?? null;
  const responses = ctx.mcpReq.inputResponses ?? null;
  stats.rounds.push({
    requestState: state,
    inputResponses: responses,
    dropped: ctx.mcpReq.droppedInputResponseKeys ?? [],
  });

  if (state === null && responses === null) {
    // Something only this server can read back, with characters a client
    // might be tempted to re-encode.
    const minted = `booking.v1/${randomBytes(12).toString('base64')}==`;
    stats.minted.push(minted);
    return inputRequired({
      inputRequests: {
        booking: inputRequired.elicit({
          message: 'How many guests, and when?',
          requestedSchema: bookingSchema,
        }),
      },
      requestState: minted,
    });
  }
  if (!stats.minted.includes(state)) {
    return text(`requestState was not echoed: ${JSON.stringify(state)}`, true);
  }
  const answer = inputResponse(responses, 'booking');
  if (answer.kind !== 'elicit') {
    return text(`no elicitation result under "booking": ${JSON.stringify(responses)}`, true);
  }
  if (answer.action === 'decline') return text('No booking made.');
  if (answer.action === 'cancel') return text('Booking cancelled.');
  const { guests, time } = answer.content ?? {};
  if (!Number.isInteger(guests) || guests < 1 || guests > 12 || !['18:00', '20:00'].includes(time)) {
    return text(`not a booking: ${JSON.stringify(answer.content)}`, true);
  }
  return text(`Booked a table for ${guests} at ${time}.`);
}

function factory() {
  const server = new McpServer({ name: 'tables', version: '1.0.0' });
  server.registerTool(
    'book_table',
    { description: 'Books a table; asks how many guests and when.' },
    bookTable,
  );
  return server;
}

const mcp = toNodeHandler(
  createMcpHandler(factory, {
    legacy: 'reject',
    onerror: (error) => console.error('mcp:', error),
  }),
);

const http = createServer((req, res) => {
  const path = new URL(req.url, 'http://localhost').pathname;
  if (path === '/stats' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(stats));
    return;
  }
  if (path === '/mcp') {
    if (req.method === 'POST') {
      stats.protocolVersions.push(req.headers['mcp-protocol-version'] ?? null);
    }
    mcp(req, res).catch((error) => {
      console.error('mcp handler:', error);
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
    return;
  }
  res.writeHead(404);
  res.end();
});

http.listen(MCP_PORT, '127.0.0.1', () => {
  console.log(`MRTR MCP Server listening on port ${MCP_PORT}`);
});
