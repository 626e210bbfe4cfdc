"""Registry aliases with their append-only log, and retrain -> compare -> promote or alert."""
