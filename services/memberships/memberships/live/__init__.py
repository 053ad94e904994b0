"""Live figures with faust-streaming: members in good standing, in grace, lapsed, and the
year's dues and donations, per federation and every ancestor (issue 11)."""
