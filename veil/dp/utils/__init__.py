"""Opacus-compatible utilities (``veil.dp.utils.batch_memory_manager``)."""
