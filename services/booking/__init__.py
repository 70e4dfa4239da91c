"""Booking: patients (real name) and appointments; where "never overbook" is decided."""
