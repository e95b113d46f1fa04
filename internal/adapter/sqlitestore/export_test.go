package sqlitestore

// ExpireDueSQL is the sweep's statement, for TestExpireDuePlan.
const ExpireDueSQL = expireDueSQL

// The listing statements, for TestListOrdersPlan.
const (
	ListOrdersSQL      = listOrdersSQL
	ListOrdersAfterSQL = listOrdersAfterSQL
)
