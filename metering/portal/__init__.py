"""The tenant portal's rules, apart from its page and its HTTP routes: portal tokens (tokens.py) and the overview
the page starts from (overview.py). The page is metering/web's, the routes metering/api/portal.py's."""
