"""Message templates: sandboxed Jinja2, checked when saved, versioned, inherited down the
federation tree, rendered per recipient by the campaign workers."""
