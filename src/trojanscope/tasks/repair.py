"""Repair as a task: scan, unlearn the trigger, prove it gone (issue 25)."""
