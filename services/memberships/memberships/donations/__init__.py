"""French political-finance rules on gifts and dues: checked before money is accepted."""
