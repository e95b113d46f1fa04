package sqlitestore

// ExpireDueSQL is the sweep's statement, for TestExpireDuePlan.
const ExpireDueSQL = expireDueSQL
