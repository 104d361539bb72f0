// One WatchEvents stream for the whole tab while signed in. Pages subscribe
// to it and refresh what an event may have changed. A broken stream
// reconnects with backoff, and subscribers hear `{ kind: 'reconnected' }`
// so they reload what they may have missed; a revoked token signs out.

import { watchEvents } from './api.js';
import { Code } from './grpc-web.js';

const listeners = new Set();
let controller = null;
let onState = () => {};
let onRevoked = () => {};

/** Calls `fn(event)` for each live event until the returned function is called. */
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(event) {
  for (const fn of [...listeners]) {
    try { fn(event); } catch (e) { console.warn('event listener failed', e); }
  }
}

/**
 * Starts the stream. `stateChanged(state)` hears 'live' | 'reconnecting';
 * `revoked(error)` is called when the server no longer accepts the token.
 */
export function start({ stateChanged, revoked }) {
  stop();
  onState = stateChanged ?? (() => {});
  onRevoked = revoked ?? (() => {});
  controller = new AbortController();
  run(controller.signal);
}

/** Ends the stream. */
export function stop() {
  if (controller) controller.abort();
  controller = null;
}

async function run(signal) {
  let delay = 500;
  let first = true;
  while (!signal.aborted) {
    try {
      const opened = () => {
        delay = 500;
        onState('live');
        if (!first) emit({ kind: 'reconnected' });
        first = false;
      };
      const stream = watchEvents('', { signal, onOpen: opened });
      for await (const event of stream) emit(event);
    } catch (e) {
      if (signal.aborted) return;
      if (e.code === Code.UNAUTHENTICATED || e.code === Code.PERMISSION_DENIED) {
        onRevoked(e);
        return;
      }
    }
    if (signal.aborted) return;
    onState('reconnecting');
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10_000);
  }
}
