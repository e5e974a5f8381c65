// Preload (`node -r ./bind-loopback.cjs <script>`) that keeps third-party test
// peers on the loopback interface.
//
// Why: the MCP TypeScript SDK's example servers call `app.listen(port, cb)`
// (and the demo authorization server `listen("3001", cb)`, the port as a
// string) without a host, which makes Node bind every interface (`::` /
// `0.0.0.0`). A test peer with an auto-approving OAuth server must not be
// reachable from the network, and we cannot edit the package's files, so we
// patch `net.Server.prototype.listen` (which `http.Server` and thus Express
// inherit) before the example runs.
//
// Only the positional form whose first argument is a port (a number or a
// numeric string) and whose second argument is not a host string is changed:
// `listen(port)`, `listen(port, cb)`, `listen(port, backlog[, cb])` and
// `listen(port, undefined|null, ...)` become `listen(port, '127.0.0.1', ...)`.
// Every other call form (an options object, a pipe path, an explicit host,
// a handle, no arguments) is passed through untouched.
'use strict';

const net = require('node:net');

const LOOPBACK = '127.0.0.1';
const originalListen = net.Server.prototype.listen;

function isPort(value) {
  return (
    (typeof value === 'number' && Number.isInteger(value)) ||
    (typeof value === 'string' && /^[0-9]+$/.test(value))
  );
}

net.Server.prototype.listen = function listen(...args) {
  if (args.length > 0 && isPort(args[0])) {
    const second = args[1];
    if (second === undefined || second === null) {
      // listen(port), listen(port, undefined, ...) or listen(port, null, ...)
      args.splice(1, args.length > 1 ? 1 : 0, LOOPBACK);
    } else if (typeof second === 'function' || typeof second === 'number') {
      // listen(port, cb) or listen(port, backlog[, cb])
      args.splice(1, 0, LOOPBACK);
    }
    // A string second argument is an explicit host: leave it alone.
  }
  return originalListen.apply(this, args);
};
