"""Speech-to-text engines: pocketsphinx (embedded) and Azure Speech."""
