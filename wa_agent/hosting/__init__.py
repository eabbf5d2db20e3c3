"""The parts :class:`~wa_agent.WhatsAppInterface` is composed of (internal; see
``docs/architecture.md`` for how a webhook body flows through them)."""
