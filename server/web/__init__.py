"""HTTP endpoints: the JSON API, the console pages, the widget and demo files."""
