//! Aloft's rollout policy engine (sans-IO).
