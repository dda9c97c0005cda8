"""A host backend wiring extension_fsm into FastAPI (see README.md here)."""
