"""Schedule: what hospitals publish (hospitals, departments, doctors, sessions, quotas)."""
