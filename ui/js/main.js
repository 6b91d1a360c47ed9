// The page shell: routes (#/jobs, #/jobs/<id>, #/submit, #/ops, #/usage, #/configs), the API key
// form, the banner for errors that concern the whole page, and the live connection.

import { UNAUTHORIZED_MESSAGE, auth, onAuth } from './api.js';
import { startLive } from './live.js';
import { showJobs } from './jobs.js';
import { showJob } from './job.js';
import { showSubmit } from './submit.js';
import { showOps } from './ops.js';
import { showUsage } from './usage.js';
import { showConfigs } from './configs.js';

const ROUTES = [
  [/^\/jobs\/([^/?]+)$/, 'jobs', (m) => showJob(decodeURIComponent(m[1]))],
  [/^\/jobs(?:\?(.*))?$/, 'jobs', (m) => showJobs(new URLSearchParams(m[1] || ''))],
  [/^\/submit$/, 'submit', () => showSubmit()],
  [/^\/ops$/, 'ops', () => showOps()],
  [/^\/usage$/, 'usage', () => showUsage()],
  [/^\/configs(?:\/([a-z]+)(?:\/([^/]+))?)?$/, 'configs', (m) => showConfigs(m[1], m[2] && decodeURIComponent(m[2]))],
];

const main = document.getElementById('main');
let leaveView = null;

function route() {
  const path = location.hash.replace(/^#/, '') || '/jobs';
  if (leaveView) leaveView();
  leaveView = null;
  main.replaceChildren();
  for (const [pattern, section, show] of ROUTES) {
    const match = path.match(pattern);
    if (!match) continue;
    markSection(section);
    const view = show(match);
    main.append(view.element);
    leaveView = view.leave || null;
    return;
  }
  location.replace('#/jobs');
}

function markSection(section) {
  for (const link of document.querySelectorAll('.sections a')) {
    if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function setUpAuth() {
  const form = document.getElementById('auth-form');
  const input = document.getElementById('api-key');
  const state = document.getElementById('auth-state');
  const signOut = document.getElementById('sign-out');
  const showState = () => {
    state.textContent = auth.key ? 'Signed in' : 'No key';
    signOut.hidden = !auth.key;
  };
  showState();
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    auth.set(input.value.trim());
    input.value = '';
  });
  signOut.addEventListener('click', () => auth.set(''));
  onAuth((change) => {
    if (change.type === 'unauthorized') {
      showBanner(UNAUTHORIZED_MESSAGE);
      input.focus();
    } else if (change.type === 'key-changed') {
      showState();
      hideBanner();
      startLive(document.getElementById('live'));
      route();
    }
  });
}

function showBanner(message) {
  const banner = document.getElementById('banner');
  banner.textContent = message;
  banner.hidden = false;
}

function hideBanner() {
  document.getElementById('banner').hidden = true;
}

setUpAuth();
window.addEventListener('hashchange', route);
startLive(document.getElementById('live'));
route();
