"""The Configuration Center UI: a small web app over conf/ with live previews of audience and trigger rules."""
