"""`m2kt bench extract`: concept accuracy beside a linear probe, per teacher, spec and method."""
