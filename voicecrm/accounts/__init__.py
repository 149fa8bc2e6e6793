"""Teams, users and API tokens: who owns the data and who is asking."""
