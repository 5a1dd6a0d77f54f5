"""PersonaGym and PersonaGym-Light (data: MIT, see data/LICENSE and data/PROVENANCE.md)."""
