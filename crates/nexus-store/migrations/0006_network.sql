-- 0006_network: each sandbox's network policy, as JSON {"allow": [...], "deny": [...]}
-- of `host:port` rules (grammar in nexus-net's policy module). Sandboxes recorded before
-- had no network at all: they get the empty policy, which allows nothing.

ALTER TABLE sandboxes ADD COLUMN network TEXT NOT NULL DEFAULT '{"allow":[],"deny":[]}';
