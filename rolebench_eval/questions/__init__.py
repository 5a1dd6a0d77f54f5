"""Custom personas for PersonaGym: persona files, question generation, versioned question sets."""
