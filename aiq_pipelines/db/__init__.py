"""The ground floor: database engines, locks, schema creation and fast statement helpers. Imports nothing of the
project, so every layer above may use it."""
