"""The problems (logistic regression, its nonconvex term) and their data sources."""
