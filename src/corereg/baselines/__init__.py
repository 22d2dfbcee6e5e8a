"""Adapters of the Table 1 comparison methods: each produces the common Learn2Reg field."""
