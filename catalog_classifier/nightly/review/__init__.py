"""The review queue (expected-value order, audit sample), its exports, and reviewer labels coming back."""
