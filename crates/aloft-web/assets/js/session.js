// The signed-in operator token and what the server said about it.
//
// The token lives in this tab's sessionStorage only: never in a URL, a
// cookie, persistent storage or a log line, and it is gone when the tab
// closes.
// The role decides what the pages offer; the server checks every call
// regardless (the UI adds no authority).

import { Role } from './messages.js';

const KEY = 'aloft.operator-token';

let info = null;

/** The token, or null when signed out. */
export function token() {
  return sessionStorage.getItem(KEY);
}

/** Signs in: keeps the token and the server's answer about it. */
export function signIn(newToken, serverInfo) {
  sessionStorage.setItem(KEY, newToken);
  info = serverInfo;
}

/** Remembers the server's answer for the token already kept. */
export function setInfo(serverInfo) {
  info = serverInfo;
}

/** Forgets the token. */
export function signOut() {
  sessionStorage.removeItem(KEY);
  info = null;
}

/** The ServerInfo of the sign-in (null when signed out). */
export function serverInfo() {
  return info;
}

/** The token's role (a Role value). */
export function role() {
  return info ? info.caller_role : Role.unspecified;
}

/**
 * Whether the pages offer rollout and device controls: operator and admin
 * only (roles are named, not compared, so a later role such as a factory
 * station's is offered nothing).
 */
export function canControl() {
  return role() === Role.operator || role() === Role.admin;
}
