"""People: sites, agents and teams, customers and their identity, timelines, credentials and profiles."""
