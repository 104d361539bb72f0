// The dashboard's entry point: sign-in state, the header, and the router.
//
// Pages live in the URL's fragment (#/fleet, #/rollouts/ID, #/devices?...),
// which never reaches the server and never holds the token. Each page
// module exports `mount(main, ctx)` and returns a function that unmounts
// it (stops its timers and listeners).

import * as api from './api.js';
import { h, focusTitle, replace } from './dom.js';
import { Code } from './grpc-web.js';
import * as live from './live.js';
import { Role } from './messages.js';
import { errorText } from './format.js';
import * as session from './session.js';
import * as signin from './pages/signin.js';
import * as fleet from './pages/fleet.js';
import * as rollouts from './pages/rollouts.js';
import * as rollout from './pages/rollout.js';
import * as devices from './pages/devices.js';
import * as device from './pages/device.js';
import * as releases from './pages/releases.js';
import * as events from './pages/events.js';

const ROUTES = [
  [/^\/fleet$/, fleet, 'fleet'],
  [/^\/rollouts$/, rollouts, 'rollouts'],
  [/^\/rollouts\/(.+)$/, rollout, 'rollouts'],
  [/^\/devices$/, devices, 'devices'],
  [/^\/devices\/(.+)$/, device, 'devices'],
  [/^\/releases$/, releases, 'releases'],
  [/^\/events$/, events, 'events'],
];

const main = document.getElementById('main');
let unmount = null;

/** Shows a short message in the corner. */
export function toast(text) {
  const el = document.getElementById('toast');
  el.textContent = text;
  el.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove('show'), 4000);
}

function parseHash() {
  const raw = decodeURI(location.hash.replace(/^#/, '')) || '/fleet';
  const [path, query = ''] = raw.split('?');
  return { path, query: new URLSearchParams(query) };
}

function navigate(path, query) {
  const q = query && [...query].length ? `?${query}` : '';
  location.hash = `#${path}${q}`;
}

function showHeader(signedIn) {
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('who').hidden = !signedIn;
  if (!signedIn) return;
  const info = session.serverInfo();
  const role = Role.nameOf(info.caller_role);
  const roleEl = document.getElementById('role');
  roleEl.textContent = session.canControl() ? role : `${role} (read only)`;
  roleEl.title = `token ${info.caller_token_id}, server ${info.version}`;
  roleEl.dataset.role = role;
}

function setLive(state) {
  const el = document.getElementById('live');
  el.textContent = state === 'live' ? 'live' : 'reconnecting…';
  el.className = `live ${state === 'live' ? 'on' : 'off'}`;
}

function render() {
  if (unmount) { unmount(); unmount = null; }
  if (!session.token() || !session.serverInfo()) {
    showHeader(false);
    unmount = signin.mount(main, { signedIn: onSignedIn, message: render.message });
    render.message = '';
    return;
  }
  const { path, query } = parseHash();
  const route = ROUTES.find(([re]) => re.test(path));
  if (!route) { navigate('/fleet'); return; }
  const [re, page, nav] = route;
  const params = path.match(re).slice(1).map(decodeURIComponent);
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.page === nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  replace(main);
  unmount = page.mount(main, { params, query, navigate, toast, live, session });
  focusTitle(main);
}

function onSignedIn() {
  showHeader(true);
  live.start({ stateChanged: setLive, revoked: onRevoked });
  if (!location.hash || location.hash === '#' || location.hash === '#/') navigate('/fleet');
  render();
}

/** The server stopped accepting the token (revoked, or the role taken away). */
function onRevoked(e) {
  signOut(`Signed out: the server no longer accepts this token (${errorText(e)}).`);
}

function signOut(message = '') {
  live.stop();
  session.signOut();
  render.message = message;
  render();
}

async function boot() {
  document.getElementById('signout').addEventListener('click', () => signOut('Signed out.'));
  // The skip link moves focus to the page's heading; its '#main' must not
  // become a route (the fragment holds the page).
  document.querySelector('a.skip').addEventListener('click', (e) => {
    e.preventDefault();
    if (!main.querySelector('h1')) main.focus();
    focusTitle(main);
  });
  window.addEventListener('hashchange', render);
  const kept = session.token();
  if (kept) {
    try {
      session.setInfo(await api.getServerInfo());
      onSignedIn();
      return;
    } catch (e) {
      if (e.code === Code.UNAUTHENTICATED) session.signOut();
      render.message = `Could not sign in again: ${errorText(e)}`;
    }
  }
  render();
}

render.message = '';
main.append(h('p', { class: 'muted' }, 'Loading…'));
boot();
