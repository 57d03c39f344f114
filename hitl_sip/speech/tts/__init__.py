"""Text-to-speech engines: espeak-ng (embedded) and Azure neural TTS."""
