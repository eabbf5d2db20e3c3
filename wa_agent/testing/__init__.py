"""Test kit for bots built on wa_agent: a local WhatsApp Cloud API emulator."""

from __future__ import annotations

from .emulator import CloudAPIEmulator

__all__ = ["CloudAPIEmulator"]
