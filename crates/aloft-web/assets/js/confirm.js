// The confirmation every control goes through: a modal dialog (focus stays
// inside it; Escape or Cancel says no; Enter in the reason field or the
// confirm button says yes).

const dialog = () => document.getElementById('confirm');

/**
 * Asks to confirm an action. Resolves to { reason } when confirmed, null
 * when cancelled. `withReason` shows the reason field.
 */
export function confirmAction({ title, body, confirmLabel, danger = false, withReason = false }) {
  const d = dialog();
  const form = document.getElementById('confirm-form');
  const reason = document.getElementById('confirm-reason');
  const ok = document.getElementById('confirm-ok');
  const cancel = document.getElementById('confirm-cancel');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-body').textContent = body;
  ok.textContent = confirmLabel;
  ok.className = danger ? 'danger' : '';
  reason.value = '';
  reason.hidden = !withReason;
  document.getElementById('confirm-reason-label').hidden = !withReason;
  const opener = document.activeElement;

  return new Promise((resolve) => {
    let answer = null;
    const onSubmit = (e) => {
      e.preventDefault();
      answer = { reason: reason.value.trim() };
      d.close();
    };
    const onCancel = () => d.close();
    const onClose = () => {
      form.removeEventListener('submit', onSubmit);
      cancel.removeEventListener('click', onCancel);
      d.removeEventListener('close', onClose);
      if (opener && opener.isConnected) opener.focus();
      resolve(answer);
    };
    form.addEventListener('submit', onSubmit);
    cancel.addEventListener('click', onCancel);
    d.addEventListener('close', onClose);
    d.showModal();
    (withReason ? reason : cancel).focus();
  });
}
