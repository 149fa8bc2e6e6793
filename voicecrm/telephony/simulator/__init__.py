"""A phone call in the terminal: the caller types, the receptionist's words are printed."""
