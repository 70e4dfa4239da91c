"""HIS synchronisation: appointment events sent to each hospital's HIS as HL7 v2.5 over MLLP."""
