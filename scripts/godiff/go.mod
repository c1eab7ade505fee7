module gotdiff

go 1.19
