"""The Configuration Center: versioned YAML under conf/, its schema, the audience rule language."""
