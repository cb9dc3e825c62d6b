// Placeholder until the widget lands: the demo page loads it and nothing breaks.
window.Nameplate = window.Nameplate || { open() {}, close() {}, identify() {} };
