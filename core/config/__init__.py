"""The configuration language: the schema of conf/ (scenes, triggers, platform), its loader and the rule language."""
