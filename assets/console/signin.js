// The sign-in page: an API key is exchanged for a session cookie and then forgotten. The field
// is a password field so the key is not shown on screen or kept by autofill as plain text.

import { h } from './dom.js';
import { signIn } from './session.js';

export function render(view, { reason }) {
  const input = h('input', {
    id: 'api-key', name: 'api-key', type: 'password', required: true,
    autocomplete: 'off', spellcheck: 'false', autocapitalize: 'off',
    'aria-describedby': 'api-key-hint',
  });
  const message = h('div', { id: 'signin-message', 'aria-live': 'assertive' });
  const button = h('button', { type: 'submit', class: 'button' }, 'Sign in');
  const form = h('form', { class: 'signin-form', novalidate: true },
    h('div', { class: 'field' },
      h('label', { for: 'api-key' }, 'API key'),
      input,
      h('p', { class: 'hint', id: 'api-key-hint' },
        'An API key of this deployment (co_…). Administrators create keys on the Admin page or with ',
        h('code', null, 'cloud-optimizer keys create'), '.')),
    button);

  if (reason && reason.text) {
    message.append(h('p', { class: ['notice', reason.code === 'signed_out' ? 'info' : 'warning'], role: 'alert', id: 'signin-reason', dataset: { code: reason.code || '', serverCode: reason.server || reason.code || '' } }, reason.text));
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    message.replaceChildren();
    if (!input.value.trim()) {
      message.append(h('p', { class: 'notice error', role: 'alert' }, 'Enter an API key.'));
      input.focus();
      return;
    }
    button.disabled = true;
    button.textContent = 'Signing in…';
    input.setAttribute('aria-invalid', 'false');
    try {
      // The key leaves the field for the request only; on success the field is emptied and no
      // variable keeps it (the session cookie is what authenticates from now on).
      await signIn(input.value.trim());
      input.value = '';
    } catch (err) {
      input.setAttribute('aria-invalid', 'true');
      message.append(h('p', { class: 'notice error', role: 'alert' }, err.detail || err.message));
      button.disabled = false;
      button.textContent = 'Sign in';
      input.focus();
    }
  });

  view.append(h('section', { class: 'signin' },
    h('img', { src: '/console/logo.svg', alt: '', width: 56, height: 56, class: 'signin-logo' }),
    h('h1', null, 'Sign in to Cloud Optimizer'),
    message,
    form));
  input.focus();
}
