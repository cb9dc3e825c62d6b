"""`nameplate demo`: a demo shop with named agents, portraits and a history worth looking at."""
