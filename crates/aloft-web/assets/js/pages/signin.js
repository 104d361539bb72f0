// Sign-in: an operator token, tried with GetServerInfo before it is kept.

import * as api from '../api.js';
import { h, pageTitle } from '../dom.js';
import { Code } from '../grpc-web.js';
import * as session from '../session.js';

/** What to tell the operator about a refused token. */
function refusal(e) {
  switch (e.code) {
    case Code.UNAUTHENTICATED:
      return `The server did not accept this token: ${e.message}. Check that you pasted all of it (it starts with aloft_) and that it was not revoked.`;
    case Code.PERMISSION_DENIED:
      return `This token may not read the fleet: ${e.message}.`;
    case Code.RESOURCE_EXHAUSTED:
      return `Too many requests with this token; try again in a moment (${e.message}).`;
    case Code.UNAVAILABLE:
      return `Could not reach the server: ${e.message}.`;
    default:
      return `Sign-in failed (${e.codeName ?? 'error'}): ${e.message}.`;
  }
}

export function mount(main, { signedIn, message }) {
  const input = h('input', {
    id: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    autocapitalize: 'off', 'aria-describedby': 'token-help signin-error', required: true,
  });
  const error = h('div', { id: 'signin-error', class: 'alert', role: 'alert' }, message || '');
  const button = h('button', { type: 'submit', id: 'signin-submit' }, 'Sign in');
  const form = h('form', { class: 'panel', novalidate: true },
    h('label', { for: 'token' }, 'Operator token'),
    input,
    h('p', { id: 'token-help', class: 'muted small' },
      'Make one with `aloft token create --name NAME --role viewer` (or operator), or use the server\'s ',
      h('span', { class: 'mono' }, 'DATA_DIR/admin-token'),
      '. It is kept in this browser tab only (session storage) and sent with each call; closing the tab forgets it.'),
    button,
    error);

  let busy = false;
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (busy) return;
    const candidate = input.value.trim();
    if (!candidate) {
      error.textContent = 'Paste an operator token first.';
      input.focus();
      return;
    }
    busy = true;
    button.disabled = true;
    error.textContent = '';
    try {
      const info = await api.getServerInfo({ token: candidate });
      input.value = '';
      session.signIn(candidate, info);
      signedIn();
    } catch (err) {
      error.textContent = refusal(err);
      input.focus();
      input.select();
    } finally {
      busy = false;
      button.disabled = false;
    }
  });

  main.replaceChildren(h('section', { class: 'signin' },
    pageTitle('Sign in to Aloft'),
    form));
  input.focus();
  return () => {};
}
